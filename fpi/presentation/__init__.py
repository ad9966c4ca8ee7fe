"""Results shown to people and CI: terminal tables, Markdown, CSV, HTML, plots, JUnit and GitHub annotations, progress."""
