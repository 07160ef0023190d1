"""ExPE reproduction package: exact positional encodings, decoders, training and evaluation.

Method reconstruction follows ../shared/METHOD.md; see README.md for what is reconstructed.
"""

__version__ = "0.1.0"
