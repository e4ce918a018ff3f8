"""Built-in integrations, written as plugins against the public hooks."""
