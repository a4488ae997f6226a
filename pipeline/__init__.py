"""The pipeline step code: preprocess, train, evaluate, gate, register, deploy (local and SageMaker)."""
