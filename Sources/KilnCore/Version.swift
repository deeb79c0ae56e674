public enum KilnCoreVersion { public static let version = "0.1.0" }
