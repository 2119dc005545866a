"""The memories domain: the rebuild asset and its checks, the incremental job and its sensor."""
