"""What a reader gets: the model card and the HTML report."""
