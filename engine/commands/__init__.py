"""What each command does beyond an audit: rule-pack tests and their coverage, explain, diff of two
pack versions, and the output files written whole or not at all. cli.py is only the click layer."""
