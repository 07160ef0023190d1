"""Architecture presets: the paper's (Section 4.1, Table 6; Section 4.2, Table 8) and CPU-sized
ones. Torch-free: the config reads them to resolve `architectures:` entries."""

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "paper-small": dict(arch="gpt", d_model=384, n_layer=6, n_head=12, dropout=0.1, vocab_size=32000, seq_len=512),
    "paper-S": dict(arch="llama", d_model=768, n_layer=12, n_head=12, dropout=0.0, vocab_size=32768, seq_len=512),
    "paper-M": dict(
        arch="llama", d_model=1024, n_layer=24, n_head=16, dropout=0.0, vocab_size=32768, seq_len=512,
        tie_embeddings=True,
    ),
    "cpu-small": dict(arch="gpt", d_model=64, n_layer=2, n_head=4, dropout=0.1, vocab_size=2048, seq_len=64),
    "cpu-S": dict(arch="llama", d_model=64, n_layer=2, n_head=4, dropout=0.0, vocab_size=2048, seq_len=64),
    # the recall study's task models (expe.data.synthetic): no dropout, vocabulary from the task
    "cpu-recall": dict(arch="gpt", d_model=64, n_layer=2, n_head=4, dropout=0.0, vocab_size=64, seq_len=64),
    "cpu-M": dict(
        arch="llama", d_model=96, n_layer=3, n_head=4, dropout=0.0, vocab_size=2048, seq_len=64, tie_embeddings=True
    ),
}

# The paper's stated sizes, for `expe params` and the test that holds presets within 3% of them.
PAPER_PARAMS = {"paper-small": (35e6, 23e6), "paper-S": (135e6, None), "paper-M": (342e6, None)}
