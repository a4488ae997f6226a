"""The model artifact contract shared by training, deploy, the model server and clients."""

from genesig.artifact.manifest import (
    MANIFEST_FILENAME,
    SCHEMA_VERSION,
    WEIGHTS_FILENAME,
    Architecture,
    Manifest,
    Output,
    Preprocessing,
    RiskGroups,
    Signature,
    Training,
    TrainingData,
    artifact_filename,
    decode_manifest,
)
from genesig.artifact.model import Predictions, SignatureModel
from genesig.artifact.package import (
    extract_artifact,
    load_model_dir,
    read_artifact,
    read_manifest,
    write_artifact,
)

__all__ = [
    "MANIFEST_FILENAME",
    "SCHEMA_VERSION",
    "WEIGHTS_FILENAME",
    "Architecture",
    "Manifest",
    "Output",
    "Predictions",
    "Preprocessing",
    "RiskGroups",
    "Signature",
    "SignatureModel",
    "Training",
    "TrainingData",
    "artifact_filename",
    "decode_manifest",
    "extract_artifact",
    "load_model_dir",
    "read_artifact",
    "read_manifest",
    "write_artifact",
]
