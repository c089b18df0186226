"""What a reader gets: model_card (the adapter's card), html_report (report.html), summary (the
run's answer in one page, results/<domain>/summary.md)."""
