"""The nightly fleet IMEI audit: which SIMs moved to another device since the last audit."""
