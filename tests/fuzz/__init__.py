"""Property-based tests of every input surface (a package, so its conftest is `fuzz.conftest`)."""
