"""What the tests share: the API constants, test IDs, the in-process sandbox helpers and the
driver of a sandbox in its own process. Test modules import these, never each other."""
