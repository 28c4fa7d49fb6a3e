"""Pools served elsewhere (the `pool` component kind)."""
