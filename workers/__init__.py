"""linewatch model side: backbones, localization, calibration, regions, evaluation."""
