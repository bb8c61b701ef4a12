"""The field network's access: where the broker is and how a client reaches it (TLS, credentials), each field
device's and service's account, and the broker's password file and topic ACL made from the inventory."""
