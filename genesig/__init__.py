"""genesig-mme: one survival model per gene signature, all behind one SageMaker Multi-Model Endpoint."""

__version__ = "0.1.0"
