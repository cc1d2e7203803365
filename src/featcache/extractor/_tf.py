"""TensorFlow's quiet import lives in `featcache._tf` (the classifier's fine-tuning uses it
too, and the classifier never imports the extractor); re-exported for the extractor."""

from featcache._tf import import_tensorflow

__all__ = ["import_tensorflow"]
