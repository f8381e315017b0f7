"""Dashboard building blocks (ipywidgets + bqplot); the pages in `labs.pages` assemble them."""
