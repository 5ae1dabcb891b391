"""Dataset readers, validators and writers (VOC, COCO, RecordIO, JumpStart); no torch."""
