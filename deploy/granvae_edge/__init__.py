"""granvae_edge: the torch-free runtime that verifies and scores granvae edge bundles.

Only numpy, onnxruntime and pillow are imported; the package never imports torch, mlflow or
granvae, so a factory-line device installs a few tens of MB rather than the training stack.
"""

from .bundle import Bundle, BundleError, load_bundle
from .contract import FrameContract, InvalidFrame
from .infer import Inspector, Verdict
from .manifest import ManifestError, validate_manifest
from .preprocess import InputError

__version__ = "0.1.0"

__all__ = [
    "Bundle",
    "BundleError",
    "FrameContract",
    "InputError",
    "Inspector",
    "InvalidFrame",
    "ManifestError",
    "Verdict",
    "__version__",
    "load_bundle",
    "validate_manifest",
]
