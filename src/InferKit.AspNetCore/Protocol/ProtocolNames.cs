namespace InferKit.AspNetCore.Protocol;

/// <summary>Property and parameter names of the Open Inference Protocol and its binary tensor data extension.</summary>
internal static class ProtocolNames
{
    public const string Id = "id";
    public const string Parameters = "parameters";
    public const string Inputs = "inputs";
    public const string Outputs = "outputs";
    public const string Name = "name";
    public const string Shape = "shape";
    public const string Datatype = "datatype";
    public const string Data = "data";
    public const string BinaryDataSize = "binary_data_size";
    public const string BinaryData = "binary_data";
    public const string BinaryDataOutput = "binary_data_output";
    public const string Timeout = "timeout";
    public const string Priority = "priority";
    public const string Classification = "classification";
    public const string BinaryTensorDataExtension = "binary_tensor_data";

    /// <summary>The protocol's platform name for an ONNX model run by ONNX Runtime ("&lt;project&gt;_&lt;format&gt;").</summary>
    public const string OnnxPlatform = "onnx_onnxv1";

    /// <summary>The datatype names, for error messages.</summary>
    public const string KnownDatatypes = "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES";
}
