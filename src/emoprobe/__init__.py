"""emoprobe: find where emotion is linearly decodable inside language models."""

__version__ = "0.1.0"
