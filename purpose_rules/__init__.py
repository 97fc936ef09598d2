"""The purpose catalogue (from the policy file) and the purpose decision."""
