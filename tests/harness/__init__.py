"""What the tests run against: real server processes, real clients, the real databases."""
