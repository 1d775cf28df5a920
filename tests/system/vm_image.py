"""The system tests' VM: the example workspace ``workspaces/vm``, built by
``scripts/vm_example.py`` in a couple of seconds from this machine's packages.

Its guest serves, on port 80: ``/`` a static page; ``/cgi-bin/disk`` the first
bytes of the data disk ``/dev/vda`` (``?write=VALUE`` writes VALUE there first,
synced); ``/cgi-bin/info`` the guest's CPU count and memory. Its serial console
runs a shell. An ACPI power-button press powers it off, so a polite shutdown works.
"""

from scripts.vm_example import GUEST_PORT, READY_MARKER, VmImage, build_vm_workspace

__all__ = ["GUEST_PORT", "READY_MARKER", "VmImage", "build_vm_workspace"]
