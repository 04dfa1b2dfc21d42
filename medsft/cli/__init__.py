"""Command-line tools: argument handling and the error policy shared by every entry point."""
