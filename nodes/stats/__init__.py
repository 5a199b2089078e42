"""National statistics (运行监测): counting, reporting upward, the top level's figures."""
