"""Data: OpenAQA-format question-answer datasets and the local audio question-answering corpus."""
