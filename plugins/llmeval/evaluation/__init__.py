"""The evaluation entry point and what it runs (generation, scoring, the local model server)."""

# The entry point logs a line starting with this once generation and the scorers that ask the
# model are done: the model is no longer needed, so its server (or endpoint) can go.
RELEASE_MARK = "llmeval:release"
