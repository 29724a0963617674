"""Certificates from the user's own CA: the `certificates` relation and the CA switch.

- `compliance`: whether KurrentDB would load and accept an issued certificate, rule by rule
  from its source, and what the node then presents and trusts;
- `switch`: the per-unit steps that move every node from one CA to another without two
  nodes ever failing to authenticate each other.
"""
