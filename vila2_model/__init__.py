"""vila2_model: the model library (presets, VILA-arch VLM, tokenizer/processor, training stages, generation). Knows nothing of the store."""
