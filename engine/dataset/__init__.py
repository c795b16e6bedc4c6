"""Fine-tuning datasets: a vision model describes each image; records in five training formats."""
