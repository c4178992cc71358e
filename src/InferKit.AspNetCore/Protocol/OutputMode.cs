namespace InferKit.AspNetCore.Protocol;

/// <summary>How one output goes back to the caller.</summary>
internal enum OutputMode : byte
{
    /// <summary>Not returned (the request named other outputs).</summary>
    Skip = 0,
    /// <summary>As a JSON <c>data</c> array.</summary>
    Json = 1,
    /// <summary>As binary data after the JSON part, with a <c>binary_data_size</c> parameter.</summary>
    Binary = 2,
}
