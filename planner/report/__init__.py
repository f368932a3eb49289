"""The review of a plan: its numbers (review, sensitivity), figures (plots), text, tables and JSON
(render), and the document (HTML and Markdown)."""
