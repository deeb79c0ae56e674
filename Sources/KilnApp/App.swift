import KilnCore
public enum KilnAppInfo { public static let version = KilnCoreVersion.version }
