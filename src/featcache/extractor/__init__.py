"""The frozen network and everything before it: weights, preprocessing, the extraction run.

Nothing here imports TensorFlow at import time; `AlexNet` does when it is built.
"""
