import KilnApp
print("kiln \(KilnAppInfo.version)")
