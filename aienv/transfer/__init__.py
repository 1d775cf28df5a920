"""Transfer: serving archives to peers and fetching them (resume, verify), and the
clone flow built on top as an explicit, persisted state machine."""
