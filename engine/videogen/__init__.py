"""Video generation: text or image to video as async remote tasks, paid once, collected always."""
