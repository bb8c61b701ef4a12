"""Faults, tickets and dispatch: rules over the fleet, debounce and correlation, the ticket lifecycle with its
transactional outbox, and the dispatcher that delivers it to the crews' channels."""
