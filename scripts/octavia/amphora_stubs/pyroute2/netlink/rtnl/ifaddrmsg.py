"""Flags interface.py reads (values of linux/if_addr.h)."""

IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
