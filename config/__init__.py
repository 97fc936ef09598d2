"""Settings, the policy file and the few shared vocabularies (reason codes, clock)."""
