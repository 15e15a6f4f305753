"""Who the users are and how their passwords are checked: the Protocol, hashing, the file."""
