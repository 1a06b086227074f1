"""Project-wide constants. Importing this module has no side effects."""

# Label value ignored by torch's cross-entropy (and by HF models' `labels`).
IGNORE_INDEX = -100

# SentencePiece's lone "▁" piece in the Llama-2 vocabulary. Tokenising `"Out: " + <action chars>`
# yields it before the first action token, so OpenVLA was trained with it there and inference
# appends it to a prompt that ends in "Out:".
LLAMA2_EMPTY_TOKEN_ID = 29871
