"""The machine: device facts, the memory estimate, `auto` settings resolved for a device, the pre-flight check and
`peftkit env`."""
