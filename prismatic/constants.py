"""Project-wide constants. Importing this module has no side effects."""

# Label value ignored by torch's cross-entropy (and by HF models' `labels`).
IGNORE_INDEX = -100

# SentencePiece's lone "▁" piece in the Llama-2 vocabulary. Tokenising `"Out: " + <action chars>`
# yields it before the first action token, so OpenVLA was trained with it there and inference
# appends it to a prompt that ends in "Out:".
LLAMA2_EMPTY_TOKEN_ID = 29871

# Llama-2's base vocabulary (without the added <PAD> and the padding rows of the embedding).
LLAMA2_VOCAB_SIZE = 32000

# Dimensions of the canonical OpenVLA action: EEF xyz delta, rpy delta, gripper.
ACTION_DIM = 7
