"""Transfer analysis (Li et al., *An Analysis of Pre-Training on Object Detection*, 2019):
what a pre-training did to a backbone, measured on features rather than on AP alone."""
