"""The review of a plan: its numbers (review, sensitivity), figures (plots), text, tables and JSON
(render), the document's blocks (document) and their HTML and Markdown (typeset)."""
