"""Reference secondary-MMU drivers (KVM-like, GRU-like, HMM mirror, IOMMU SVA)."""
