"""The revision graph (pure logic, no I/O) and the revision files that define it."""
