"""The corpus/ folder holds training scripts to lint, not tests: pytest must not import them."""

collect_ignore = ["corpus"]
