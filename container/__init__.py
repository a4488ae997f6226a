"""The serving image: Multi Model Server in MME mode, our gateway, handler and memory-aware loader."""
