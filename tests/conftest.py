"""The tests' fixtures, for every kind: the private services and a fresh database per test
(`tests.support.services`), and the factories of a seeded city, a signed-in API client and a gateway
(`tests.support.factories`)."""

pytest_plugins = ("tests.support.services", "tests.support.factories")
