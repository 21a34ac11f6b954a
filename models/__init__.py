"""Models: loading (HF id or local folder), the locally built tiny model, samplers and trainers."""
