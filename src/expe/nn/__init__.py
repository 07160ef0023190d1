"""Networks: positional encodings (one registry) and the decoder models of the paper."""
