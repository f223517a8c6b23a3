"""What the tests share: real servers (SMTP, Hugging Face, the web front), builders of
configs, pages and stores, and the CLI runners. Fixtures over these live in conftest.py."""
