"""Networks: the Puzzle-CAM classifier, AffinityNet and DeepLabv3+, all on timm backbones; `factory` builds
and rebuilds them."""
